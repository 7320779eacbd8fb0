"""Feature states as earlier releases saved them: an npz of the meta and the arrays."""

from __future__ import annotations

import io
import json
import math

import numpy as np

from detection.features import STATE_VERSION, FeatureState


def as_npz(state: FeatureState, version: int = STATE_VERSION) -> bytes:
    """``state`` saved as an npz (the container before the raw one), with ``version`` in its meta."""
    meta = {
        "version": version,
        "level": state.level,
        "window": state.window,
        "decays": list(state.decays),
        "max_keys": state.max_keys,
        "max_tail": state.max_tail,
        "t_last": state.t_last if math.isfinite(state.t_last) else None,
        "packets": state.packets,
    }
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **state._arrays())
    return buf.getvalue()
