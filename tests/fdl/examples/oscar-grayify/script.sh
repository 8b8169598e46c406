#!/bin/bash
echo "SCRIPT: Invoked File Function. File available in $INPUT_FILE_PATH"
FILE_NAME=$(basename "$INPUT_FILE_PATH")
OUTPUT_FILE="$TMP_OUTPUT_DIR/$FILE_NAME"
convert "$INPUT_FILE_PATH" -type Grayscale "$OUTPUT_FILE"
