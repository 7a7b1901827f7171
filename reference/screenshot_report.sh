#!/usr/bin/env bash
# Render a report.html (moe compare / moe sweep) in headless Chromium and cut the page into
# 1280×1500 screenshots, to look at the report as a reader does (plots inside their axes, legends
# off the data, tables readable). Needs `chromium` (Debian: apt-get install chromium) and Pillow.
# Usage: reference/screenshot_report.sh runs/compare/report.html /tmp/shots
set -euo pipefail
html=$(realpath "$1"); out=${2:-/tmp/report-shots}
mkdir -p "$out"
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,20000 \
  --screenshot="$out/full.png" "file://$html" 2>/dev/null
python3 - "$out" <<'PY'
import sys
from PIL import Image
out = sys.argv[1]
im = Image.open(f"{out}/full.png")
px = im.convert("L").load()
w, h = im.size
# trim the white space below the page
last = max((y for y in range(h - 1, 0, -8) if any(px[x, y] < 250 for x in range(0, w, 16))), default=h)
n = 0
for top in range(0, last + 1, 1500):
    im.crop((0, top, w, min(top + 1500, last + 20))).save(f"{out}/page{n:02d}.png")
    n += 1
print(f"{n} screenshots in {out} (page height {last} px)")
PY
