import builtins

_real = builtins.__import__


def _spy(name, *args, **kwargs):
    raise ImportError(f"hijacked: {name}")


builtins.__import__ = _spy
