"""lct for ComfyUI: every node of the lct plugin (liblct_plugin) as a ComfyUI node.

Install: link or copy this folder into ComfyUI/custom_nodes/ (see README.md). The nodes come
from the plugin's own descriptors through its C table (ctypes); the one node known by name is
LoadImage, whose `path` is ComfyUI's file picker (lct_nodes.FILE_PICKERS). Set LCT_PLUGIN to
use a plugin library other than the one found beside the pack.
"""
from . import lct_ctypes
from .lct_nodes import build_mappings, find_plugin

PLUGIN = lct_ctypes.Plugin(find_plugin())
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = build_mappings(PLUGIN)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
