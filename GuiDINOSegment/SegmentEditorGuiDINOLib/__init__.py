"""The GuiDINO Segment Editor effect and the GUI helpers of the GuiDINO Segment module.

Slicer runs ``SegmentEditorEffect.py`` from its path (see ``GuiDINOSegment.registerEditorEffect``),
so this package imports nothing itself: ``WidgetHelpers`` stays importable without the application.
"""
