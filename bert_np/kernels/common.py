"""What every kernel module shares: the dtypes the kernels are compiled for."""

FLOAT_TYPES = ("float32", "float64")


def supported(*arrays):
    """True if all arrays share one dtype the kernels are compiled for; otherwise the wrapper calls
    the NumPy reference, which then applies NumPy's promotion rules."""
    dtype = arrays[0].dtype
    return dtype.name in FLOAT_TYPES and all(a.dtype == dtype for a in arrays)
