#!/bin/sh
# The 20 most common words of $INPUT_FILE_PATH, most common first.
set -e
name=$(basename "$INPUT_FILE_PATH" .txt)
tr -cs 'A-Za-z' '\n' < "$INPUT_FILE_PATH" | tr 'A-Z' 'a-z' | grep -v '^$' \
  | sort | uniq -c | sort -rn | head -20 > "$TMP_OUTPUT_DIR/$name.top20"
echo "$name: $(wc -w < "$INPUT_FILE_PATH") words, counted in container $(hostname)"
