#!/usr/bin/env bash
# Rebuilds ../console/vendor/ (committed) from the exact versions in package-lock.json. Only needed when
# a library is upgraded: building and running doppel needs no Node.js.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npx esbuild entry.js --bundle --format=esm --minify --legal-comments=eof --target=es2020 \
    --outfile=../console/vendor/vendor.js
cp node_modules/uplot/dist/uPlot.min.css ../console/vendor/uPlot.min.css
