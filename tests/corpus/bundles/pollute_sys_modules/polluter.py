import sys
import types

# Every module of every other namespace is taken out and an empty one put in its place.
own_package = __name__.rpartition(".")[0]
for key in list(sys.modules):
    if key.startswith("plughost_ns.t_") and not key.startswith(own_package):
        del sys.modules[key]
        sys.modules[key] = types.ModuleType(key)
