#!/usr/bin/env bash
# Rebuilds ../console/vendor/ (committed) from the exact versions in package-lock.json. Only needed when
# a library is upgraded: building and running doppel needs no Node.js.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npx esbuild entry.js --bundle --format=esm --minify --legal-comments=eof --target=es2020 \
    --outfile=../console/vendor/vendor.js
cp node_modules/uplot/dist/uPlot.min.css ../console/vendor/uPlot.min.css
# The bundled packages' licenses, served beside the bundle.
npm ls --omit=dev --all --parseable | tail -n +2 | sort -u | while read -r dir; do
    node -e 'const p = require(process.argv[1] + "/package.json"); console.log(`== ${p.name} ${p.version} (${p.license})`)' "$dir"
    cat "$dir"/LICENSE* 2>/dev/null || echo "(no license file in the package)"
    echo
done > ../console/vendor/LICENSES.txt
