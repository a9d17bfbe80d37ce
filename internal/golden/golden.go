// Package golden compares rendered test output (API bodies, SIP replies, event JSON) with
// files under testdata, and rewrites those files when the test binary runs with -update.
// Only tests import it.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// Check compares got with the file at path. With -update it writes got there instead.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// MarkdownTable returns the body rows of the first table under the heading (a line such as
// "## The event object") of the Markdown file at path, each row split into trimmed cells with
// their backquotes removed: tests check a reference document's tables against the code.
func MarkdownTable(t testing.TB, path, heading string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := bytes.Cut(b, []byte("\n"+heading+"\n"))
	if !ok {
		t.Fatalf("%s has no heading %q", path, heading)
	}
	var rows [][]string
	inTable := false
	for _, line := range strings.Split(string(after), "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		if !inTable { // the header row, then the delimiter row
			inTable = true
			continue
		}
		if strings.Trim(line, "|-: ") == "" { // the delimiter row: |---|, | --- |, |:--|
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), " | ") {
			cells = append(cells, strings.Trim(strings.TrimSpace(c), "`"))
		}
		rows = append(rows, cells)
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no table under %q", path, heading)
	}
	return rows
}
