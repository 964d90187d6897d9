"""A test double of VMware's libvixDiskLib.so (the VDDK ABI over plain files), and pytest fixtures using it.

The double is ``vixDiskLibDouble.c``: see its header for what it does. It is
not VDDK; the tests use it because VDDK cannot be downloaded on test machines.
"""
