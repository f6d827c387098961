"""Error helpers: every error about a node names the op, the shapes, and the user's file:line."""
import os
import sys

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_site():
    """``file:line`` of the innermost caller outside the autobatch package (the user's line)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
    return "<unknown>" if f is None else f"{f.f_code.co_filename}:{f.f_lineno}"


def at(message):
    """``message`` followed by where the user built the node."""
    return f"{message} (at {user_site()})"
