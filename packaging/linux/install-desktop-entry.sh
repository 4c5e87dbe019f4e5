#!/bin/sh
# Adds Weightsmith to the desktop's application menu for this user (no root needed):
# the icon in every size to ~/.local/share/icons/hicolor and a .desktop entry pointing at this folder.
# Run it again after moving the folder; run it with --remove to take the entry away.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
entry="$data/applications/weightsmith.desktop"
if [ "${1:-}" = "--remove" ]; then
    rm -f "$entry" "$data"/icons/hicolor/*/apps/weightsmith.png "$data/icons/hicolor/scalable/apps/weightsmith.svg"
    echo "removed the Weightsmith menu entry"
    exit 0
fi
icons="$here/_internal/resources/icons/app"
for png in "$icons"/weightsmith-*.png; do
    size=$(basename "$png" .png | sed 's/weightsmith-//')
    mkdir -p "$data/icons/hicolor/${size}x${size}/apps"
    cp "$png" "$data/icons/hicolor/${size}x${size}/apps/weightsmith.png"
done
mkdir -p "$data/icons/hicolor/scalable/apps" "$data/applications"
cp "$icons/weightsmith.svg" "$data/icons/hicolor/scalable/apps/weightsmith.svg"
sed "s|^Exec=weightsmith|Exec=\"$here/weightsmith\"|" "$here/weightsmith.desktop" > "$entry"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "added Weightsmith to the application menu ($entry)"
