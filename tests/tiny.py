"""Tiny settings shared by the tests, read from each purifier's own registration (``PurifierEntry.tiny``), so a new
purifier file brings its tiny network and settings with it: networks (``TINY_RECIPES``), training lengths other than
one epoch (``TINY_EPOCHS``), a short purification for unit tests (``TINY_PARAMS``) and for audits
(``TINY_PURIFICATION``)."""

from robaudit.purifiers import PURIFIERS


def _tiny(part: str) -> dict[str, dict]:
    """``part`` of every purifier's tiny settings, for the purifiers that declare it."""
    return {entry.name: dict(entry.meta["tiny"][part]) for entry in PURIFIERS if part in entry.meta["tiny"]}


TINY_RECIPES = _tiny("recipe")
TINY_PARAMS = _tiny("params")
TINY_PURIFICATION = _tiny("purification")
TINY_EPOCHS = _tiny("epochs")
