"""Constants of the ray traversal shared by the torch caster (``raycast.py``) and the numba kernel
(``_raycast_numba.py``); their own module so that neither caster imports the other."""
from __future__ import annotations

import numpy as np

MAX_STEP = 1000                     # the official loop stops after more than MAX_STEP iterations
DBL_MAX = float(np.finfo(np.float64).max)
