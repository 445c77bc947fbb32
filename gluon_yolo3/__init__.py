"""gluon-yolo3: a YOLOv3 detector for MXNet/Gluon built from registered, swappable parts."""
from .amx import allow_amx
from .threads import spin_before_sleeping, use_physical_cores

use_physical_cores()        # before anything imports MXNet: see threads.py
spin_before_sleeping()
allow_amx()                 # int8 on AMX tiles where the CPU has them: see amx.py
__version__ = "0.1.0"
