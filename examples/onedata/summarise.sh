#!/bin/sh
# A summary of the CSV file $INPUT_FILE_PATH: its lines, the columns of its header, size.
set -e
name=$(basename "$INPUT_FILE_PATH" .csv)
{
  echo "file: $name.csv"
  echo "lines: $(wc -l < "$INPUT_FILE_PATH")"
  echo "columns: $(head -1 "$INPUT_FILE_PATH" | tr ',' '\n' | wc -l)"
  echo "bytes: $(wc -c < "$INPUT_FILE_PATH")"
} > "$TMP_OUTPUT_DIR/$name.summary"
echo "summarised $name.csv"
