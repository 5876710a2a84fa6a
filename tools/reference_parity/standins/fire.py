"""Stand-in for python-fire (not packaged in Debian 12): sd3_infer.py imports it for its command
line, which the parity script does not use."""


def Fire(*args, **kwargs):  # noqa: N802 (the real name)
    raise SystemExit("fire stand-in: call sd3_infer's functions directly (tools/reference_parity/sd3_e2e.py)")
