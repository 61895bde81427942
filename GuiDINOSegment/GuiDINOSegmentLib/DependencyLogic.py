"""First-use check of GuiDINO's Python dependencies inside Slicer, and their installation after asking.

The decisions (what is missing, how each package gets installed) are plain functions with the
import checker and the installers' availability injected, so they are tested without Slicer.
``DependencyLogic`` is the thin edge: it asks the user and calls Slicer's installers. It is called
when the user presses Run or opens the GuiDINO effect: never from a constructor, never while
Slicer runs its tests (``--testing``), never without a confirmation dialog.
"""

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from dataclasses import dataclass

# (import name, pip requirement): the ranges of pyproject.toml (a test keeps them equal).
REQUIREMENTS = (
    ("torch", "torch>=2.4,<2.15"),
    ("transformers", "transformers>=5.0,<6"),
    ("peft", "peft>=0.17,<0.22"),
    ("safetensors", "safetensors>=0.4,<1"),
    ("SimpleITK", "SimpleITK>=2.3,<3"),
    ("skimage", "scikit-image>=0.22,<0.27"),
    ("monai", "monai>=1.4,<1.7"),
)
# Shipped with Slicer and never pip-installed into it (Slicer's SimpleITK has Slicer's own IO).
BUNDLED_WITH_SLICER = ("SimpleITK",)
TORCH = "torch"
REQUESTER = "GuiDINO"
# transformers 5 needs Python 3.10; Slicer 5.8 ships Python 3.9, Slicer 5.10 Python 3.12.
MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER = (5, 10)


def unsupportedReason(slicerVersion, pythonVersion):
    """Why GuiDINO cannot run in this Slicer (None when it can), said before anything is downloaded.

    ``slicerVersion`` and ``pythonVersion`` are (major, minor, ...) tuples.
    """
    slicer, python = tuple(slicerVersion[:2]), tuple(pythonVersion[:2])
    if slicer >= MINIMUM_SLICER and python >= MINIMUM_PYTHON:
        return None
    return (f"GuiDINO needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or newer (with Python "
            f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer, which its packages need); this is Slicer "
            f"{slicer[0]}.{slicer[1]} with Python {python[0]}.{python[1]}. Install a current Slicer release from "
            "download.slicer.org. Nothing was installed.")


def isImportable(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installedVersion(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _split(requirement):
    """('torch', '>=2.4,<2.15') from 'torch>=2.4,<2.15'."""
    for index, char in enumerate(requirement):
        if char in "<>=!~ ;[":
            return requirement[:index], requirement[index:].strip()
    return requirement, ""


def versionSatisfies(version, specifier):
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion
    except ImportError:  # no way to compare here: an importable package counts as present
        return True
    try:
        return SpecifierSet(specifier).contains(version, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True


def missingRequirements(requirements=REQUIREMENTS, isImportable=isImportable, installedVersion=installedVersion):
    """The pip requirements that are not importable, or installed in a version outside their range."""
    missing = []
    for importName, requirement in requirements:
        distribution, specifier = _split(requirement)
        if not isImportable(importName):
            missing.append(requirement)
            continue
        version = installedVersion(distribution)  # None: importable without metadata (e.g. Slicer's own build)
        if version is not None and specifier and not versionSatisfies(version, specifier):
            missing.append(requirement)
    return missing


@dataclass(frozen=True)
class InstallPlan:
    """How the missing requirements get installed. Installers: 'PyTorchUtils', 'slicer.packaging', 'pip_install'."""

    torch: str = ""  # torch requirement, installed first (other packages depend on it)
    torchInstaller: str = ""
    packages: tuple = ()  # the other requirements, installed with pip
    packageInstaller: str = ""
    notInstallable: tuple = ()  # missing, but shipped with Slicer: a broken or too old Slicer

    @property
    def empty(self):
        return not (self.torch or self.packages or self.notInstallable)

    def confirmationText(self):
        lines = ["GuiDINO needs these Python packages, which are not installed in Slicer's Python:", ""]
        if self.torch:
            via = ("the PyTorch extension (it picks the build that matches your GPU driver)"
                   if self.torchInstaller == "PyTorchUtils" else "pip (CPU or default CUDA build)")
            lines.append(f"  - {self.torch}, through {via}")
        lines += [f"  - {requirement}" for requirement in self.packages]
        lines += ["", "They are downloaded once (about 1-3 GB with PyTorch); this can take several minutes.",
                  "Install them now?"]
        return "\n".join(lines)

    def notInstallableText(self):
        return (f"Slicer's own {', '.join(self.notInstallable)} is missing or too old for GuiDINO "
                "(it is part of Slicer and cannot be installed with pip): install a recent Slicer release.")


def makeInstallPlan(missing, hasPyTorchUtils, hasPackaging):
    """Which installer takes which missing requirement.

    torch goes through the PyTorch extension's ``installTorch`` when the extension is there (it
    chooses the CUDA build for the driver), else through pip. The rest goes through
    ``slicer.packaging.pip_ensure`` where Slicer has it (first shipped in Slicer 5.11), else
    ``slicer.util.pip_install``. Packages bundled with Slicer are never pip-installed.
    """
    torch, others, blocked = "", [], []
    for requirement in missing:
        name = _split(requirement)[0]
        if name == TORCH:
            torch = requirement
        elif name in BUNDLED_WITH_SLICER:
            blocked.append(name)
        else:
            others.append(requirement)
    return InstallPlan(
        torch=torch,
        torchInstaller=("PyTorchUtils" if hasPyTorchUtils else "pip_install") if torch else "",
        packages=tuple(others),
        packageInstaller=("slicer.packaging" if hasPackaging else "pip_install") if others else "",
        notInstallable=tuple(blocked),
    )


def _normalized(name):
    return name.lower().replace("_", "-").replace(".", "-")


def slicerConstraints(plan, installed=None):
    """pip constraints ("name==version" lines) pinning every distribution this Python already has (Slicer's
    numpy, scipy, requests...), except the ones the plan installs: pip then resolves GuiDINO's packages around
    Slicer's own, and fails with a clear conflict instead of replacing them. ``installed``: {name: version},
    read from the running Python by default (never a hard-coded list: it follows the Slicer release)."""
    if installed is None:
        installed = {dist.metadata["Name"]: dist.version for dist in importlib.metadata.distributions()
                     if dist.metadata["Name"]}
    planned = {_normalized(_split(requirement)[0]) for requirement in (plan.torch, *plan.packages) if requirement}
    return sorted(f"{name}=={version}" for name, version in installed.items()
                  if _normalized(name) not in planned)


def nextStep(plan, testing, unsupported=None):
    """What the GUI does: 'unsupported' (this Slicer is too old: say so, install nothing), 'ready', 'refuse'
    (not installable here), 'skip' (testing: never install), 'ask'."""
    if unsupported:
        return "unsupported"
    if plan.empty:
        return "ready"
    if plan.notInstallable:
        return "refuse"
    return "skip" if testing else "ask"


class DependencyLogic:
    """Checks GuiDINO's Python packages and installs the missing ones after the user agreed."""

    _offered = False  # the install offer made on opening the effect: once per Slicer session

    def __init__(self, requirements=REQUIREMENTS):
        self.requirements = requirements

    def offerOnce(self, parent=None):
        """``ensureDependencies`` the first time in a session; afterwards only report whether all are there."""
        if DependencyLogic._offered:
            return not self.missing()
        DependencyLogic._offered = True
        return self.ensureDependencies(parent)

    def missing(self):
        return missingRequirements(self.requirements)

    def plan(self):
        return makeInstallPlan(self.missing(), hasPyTorchUtils=isImportable("PyTorchUtils"),
                               hasPackaging=_hasPackaging())

    def ensureDependencies(self, parent=None):
        """True when every package is there (installing them if the user agrees); False otherwise."""
        import slicer

        plan = self.plan()
        unsupported = unsupportedReason((slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info)
        step = nextStep(plan, slicer.app.testingEnabled(), unsupported)
        if step == "unsupported":
            slicer.util.errorDisplay(unsupported, windowTitle=f"{REQUESTER} - Slicer version", parent=parent)
            return False
        if step == "ready":
            return True
        if step == "refuse":
            slicer.util.errorDisplay(plan.notInstallableText(), windowTitle=f"{REQUESTER} - Python packages",
                                     parent=parent)
            return False
        if step == "skip":
            logging.warning(f"{REQUESTER}: not installing {', '.join(self.missing())} while Slicer runs tests")
            return False
        title = f"{REQUESTER} - Install Python packages"
        if not slicer.util.confirmOkCancelDisplay(plan.confirmationText(), windowTitle=title, parent=parent):
            return False
        self.install(plan)
        still = self.missing()
        if still:
            slicer.util.errorDisplay(f"These packages are still missing: {', '.join(still)}. Restart Slicer and "
                                     "try again; the Python console shows pip's messages.", parent=parent)
        return not still

    def install(self, plan):
        """Run ``plan`` (the user has agreed). torch first: peft and monai depend on it. pip installs under
        ``slicerConstraints`` (Slicer's own packages stay as they are)."""
        import tempfile

        import slicer

        with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as file:
            file.write("\n".join(slicerConstraints(plan)) + "\n")
        constraints = file.name
        if plan.torch:
            _, specifier = _split(plan.torch)
            if plan.torchInstaller == "PyTorchUtils":
                import PyTorchUtils

                # The user agreed in our dialog already: the extension must not ask a second time.
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                 torchVersionRequirement=specifier) is None:
                    raise RuntimeError("PyTorch was not installed: GuiDINO cannot run without it.")
            else:
                slicer.util.pip_install(["-c", constraints, plan.torch])  # Slicer 5.10: a list of pip arguments
        if plan.packages:
            if plan.packageInstaller == "slicer.packaging":
                import slicer.packaging

                # Already confirmed above; pip_ensure still refuses to install while testing.
                slicer.packaging.pip_ensure(list(plan.packages), prompt_install=False, requester=REQUESTER,
                                            constraints=constraints)
            else:
                slicer.util.pip_install(["-c", constraints, *plan.packages])
        importlib.invalidate_caches()


def _hasPackaging():
    try:
        import slicer.packaging

        return callable(getattr(slicer.packaging, "pip_ensure", None))
    except ImportError:
        return False

