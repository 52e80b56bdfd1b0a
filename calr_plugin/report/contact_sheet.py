"""A contact sheet of one camera's tracklets: a row of crops per tracklet, to see what was cut.

Shape shorthand: R tracklets shown, K crops a row, h x w one cell.
"""
import io
import os

from PIL import Image, ImageDraw

from ..utils.atomic import atomic_write_bytes

__all__ = ["contact_sheet"]


def contact_sheet(rows, root, path, per_tracklet=6, max_tracklets=20, cell=(128, 64)):
    """Write a PNG: per tracklet (the longest first), up to ``per_tracklet`` of its crops.

    Args:
        rows (list[dict]): crops.csv rows of one camera (``tracklet``, ``frame``, ``path``).
        root (str): the folder the rows' paths are relative to. path (str): the PNG to write.
        per_tracklet (int): K. max_tracklets (int): R at most. cell (tuple): (h, w) of a crop.
    Returns:
        str: ``path``; None when there is no row.
    """
    by_tracklet = {}
    for r in rows:
        by_tracklet.setdefault(r["tracklet"], []).append(r)
    if not by_tracklet:
        return None
    chosen = sorted(by_tracklet.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:max_tracklets]
    h, w = cell
    label = 70
    sheet = Image.new("RGB", (label + per_tracklet * (w + 2), len(chosen) * (h + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (name, crops) in enumerate(chosen):
        crops = sorted(crops, key=lambda r: int(r["frame"]))
        step = max(1, len(crops) / per_tracklet)
        picks = [crops[int(j * step)] for j in range(min(per_tracklet, len(crops)))]
        y = i * (h + 2)
        draw.text((4, y + h // 2 - 12), f"{name}\n{len(crops)} crops", fill=(0, 0, 0))
        for j, r in enumerate(picks):
            with Image.open(os.path.join(root, r["path"])) as im:
                sheet.paste(im.convert("RGB").resize((w, h)), (label + j * (w + 2), y))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
