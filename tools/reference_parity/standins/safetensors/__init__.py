"""Stand-in for the safetensors package (not packaged in Debian 12): the reading side the SD3.5
reference uses (safe_open(...).keys() / get_tensor()), and a writer for the parity script.
Format: 8-byte little-endian header length, a JSON header of name -> dtype, shape, data_offsets
(relative to the end of the header) plus an optional __metadata__, then the tensor bytes."""
import json
import struct

import numpy as np
import torch

_NUMPY = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "F64": np.float64}


class _File:
    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        self._header = json.loads(data[8 : 8 + n].decode("utf-8"))
        self._header.pop("__metadata__", None)
        self._data = memoryview(data)[8 + n :]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def keys(self):
        return list(self._header.keys())

    def get_tensor(self, name):
        e = self._header[name]
        a, b = e["data_offsets"]
        if e["dtype"] == "BF16":
            raw = np.frombuffer(self._data[a:b], dtype=np.int16).astype(np.int32) << 16
            return torch.from_numpy(raw.view(np.float32).reshape(e["shape"]).copy())
        arr = np.frombuffer(self._data[a:b], dtype=_NUMPY[e["dtype"]]).reshape(e["shape"])
        return torch.from_numpy(arr.copy())


def safe_open(path, framework="pt", device="cpu"):
    # The parity run maps CUDA to the CPU (sd3_e2e.py), so "cuda" gets CPU tensors too.
    assert framework == "pt" and str(device) in ("cpu", "cuda"), "stand-in: CPU torch tensors only"
    return _File(path)


def save_file(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        dtype = {torch.int32: "I32", torch.int64: "I64"}.get(t.dtype, "F32")
        arr = (t.detach() if dtype != "F32" else t.detach().to(torch.float32)).contiguous().numpy()
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
