"""A bar chart's geometry for the server-rendered SVG of events per day (no script, no library)."""
from __future__ import annotations

WIDTH, HEIGHT, LABELS = 720, 150, 18  # the bars' area, and the strip under it for the day labels
GAP = 2


def bars(days: list[dict], width: int = WIDTH, height: int = HEIGHT) -> dict:
    """Each day's bar as x, y, w, h in a `width` × `height` area; labels for the first, middle and last day."""
    peak = max((day["count"] for day in days), default=0)
    slot = width / max(1, len(days))
    drawn = []
    for i, day in enumerate(days):
        h = round(height * day["count"] / peak, 1) if peak else 0
        drawn.append({**day, "x": round(i * slot + GAP / 2, 1), "y": round(height - h, 1),
                      "w": round(slot - GAP, 1), "h": h})
    marks = sorted({0, len(days) // 2, len(days) - 1}) if days else []
    anchors = {0: "start", len(days) - 1: "end"}  # the outer labels stay inside the picture
    labels = [{"x": 0 if i == 0 else width if i == len(days) - 1 else round(i * slot + slot / 2, 1),
               "anchor": anchors.get(i, "middle"), "text": days[i]["day"][5:]} for i in marks]
    return {"width": width, "height": height, "full_height": height + LABELS, "bars": drawn, "labels": labels,
            "peak": peak}
