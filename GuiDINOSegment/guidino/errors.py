"""The errors the engine raises for what the user gave it; each message names the problem and the fix.

They are ``ValueError`` / ``RuntimeError`` subclasses, so the command line prints them as one line
and the Slicer modules show them in a dialog, never as a traceback.
"""


class InputError(ValueError):
    """Input the engine cannot use (a volume, labels, an argument)."""


class BundleError(ValueError):
    """A missing, corrupt or mismatched model bundle."""


class GuideNotFoundError(RuntimeError):
    """The guide weights are not where they were looked for."""


class GeometryWarning(UserWarning):
    """A volume whose header may place it elsewhere than its maker meant (read as ITK and Slicer read it)."""
