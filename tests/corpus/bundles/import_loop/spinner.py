import os

# Spins at import, holding the CPU. It ends only when a file named
# "release-spinners" appears in the working directory, so that a test can let
# an in-process import finish; nothing else stops it.
spins = 0
while True:
    spins += 1
    if spins % 200_000 == 0 and os.path.exists("release-spinners"):
        break


def perform(**kwargs):
    return "released"
