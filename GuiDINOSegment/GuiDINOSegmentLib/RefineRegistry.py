"""The Segment Editor effect's "Refine from corrections", offered by the GuiDINO Train module.

The Train module registers its refine Logic when Slicer loads it; the effect asks for it when it needs it. The
Segment module never imports the Train module: imports run one way, Train to Segment.
"""

_refineLogicFactory = None


def registerRefineLogic(factory):
    """Offer "Refine from corrections" to the Segment module: the GuiDINO Train module calls this when
    Slicer loads it. ``factory()`` returns the refine Logic class (it needs the installed packages: it is called
    only when needed); None withdraws the offer."""
    global _refineLogicFactory
    _refineLogicFactory = factory


def refineLogicClass():
    """The registered refine Logic class, or None (no Train module, or it cannot be imported or refine)."""
    if _refineLogicFactory is None:
        return None
    try:
        cls = _refineLogicFactory()
    except ImportError:
        return None
    return cls if all(callable(getattr(cls, name, None)) for name in ("prepareRefine", "newRefineRun")) else None
