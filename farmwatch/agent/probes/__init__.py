"""One probe per subpackage (its ``probe.py`` beside the sources only it reads); :mod:`.registry` names them;
:mod:`.base` is the interface they share, :mod:`.salted` the hashing two of them share."""
