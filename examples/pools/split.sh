#!/bin/sh
# Cut a text into chapters at lines starting with "Chapter", one file per chapter.
set -e
name=$(basename "$INPUT_FILE_PATH" .txt)
awk -v out="$TMP_OUTPUT_DIR/$name" '
  /^Chapter/ { n++ }
  { file = sprintf("%s-%02d.txt", out, n + 0); print > file }
' "$INPUT_FILE_PATH"
echo "$name: $(ls "$TMP_OUTPUT_DIR" | wc -l) chapter(s)"
