"""Stand-in for einops (not packaged in Debian 12): `rearrange` and `repeat` for patterns made of
named axes, parenthesised groups, literal 1 and (repeat only) a leading "1 ..." — what the SD3.5
reference's mmditx.py and sd3_impls.py use."""
import math

import torch


def _parse(side):
    groups, i, tokens = [], 0, side.replace("(", " ( ").replace(")", " ) ").split()
    while i < len(tokens):
        if tokens[i] == "(":
            j = tokens.index(")", i)
            groups.append(tokens[i + 1 : j])
            i = j + 1
        else:
            groups.append([tokens[i]])
            i += 1
    return groups


def rearrange(x, pattern, **sizes):
    lhs, rhs = (_parse(s) for s in pattern.split("->"))
    assert len(lhs) == x.dim(), (pattern, tuple(x.shape))
    known = dict(sizes)
    for group, extent in zip(lhs, x.shape):
        unknown = [a for a in group if a != "1" and a not in known]
        rest = math.prod(known[a] for a in group if a != "1" and a in known)
        assert len(unknown) <= 1, pattern
        if unknown:
            known[unknown[0]] = extent // rest
        else:
            assert rest == extent, (pattern, group, extent)
    elementary = [a for group in lhs for a in group if a != "1"]
    x = x.reshape([known[a] for a in elementary])
    order = [a for group in rhs for a in group if a != "1"]
    x = x.permute([elementary.index(a) for a in order])
    return x.reshape([math.prod(known[a] for a in group if a != "1") for group in rhs])


def repeat(x, pattern, **sizes):
    lhs, rhs = (s.split() for s in pattern.split("->"))
    if lhs[:2] == ["1", "..."] and rhs[1:] == ["..."] and len(lhs) == 2:
        return x.expand(sizes[rhs[0]], *x.shape[1:])
    raise NotImplementedError("einops stand-in: repeat pattern " + pattern)
