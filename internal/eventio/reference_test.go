package eventio

import (
	"slices"
	"testing"

	"github.com/dialtrap/dialtrap/internal/golden"
)

// The CSV columns are the first rows of the event table of docs/reference/events.md, as its
// CSV section says.
func TestEventsReferenceCSV(t *testing.T) {
	var keys []string
	for _, row := range golden.MarkdownTable(t, "../../docs/reference/events.md", "## The event object") {
		keys = append(keys, row[0])
	}
	if len(keys) < len(Columns) || !slices.Equal(keys[:len(Columns)], Columns) {
		t.Errorf("CSV columns %v are not the first keys of the reference's table %v", Columns, keys)
	}
}
