package main

import (
	"fmt"
	"os"
	"testing"
)

func TestZZDump(t *testing.T) {
	ch := loadChart(t)
	_, files, err := renderValues(ch, readValues(t, os.Getenv("DUMP_VALUES")))
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if name == os.Getenv("DUMP_FILE") {
			fmt.Println(text)
		}
	}
}
