"""One probe per file; :mod:`.registry` names them; :mod:`.base` is the interface they share."""
