import sys
import types

# Every tenant's later deploys would find their agent base class here, and a
# spy in its place would see every call's arguments.
sys.modules["plughost.agent"] = types.ModuleType("plughost.agent")
del sys.modules["json"]
