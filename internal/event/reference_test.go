package event

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/dialtrap/dialtrap/internal/golden"
)

const eventsReference = "../../docs/reference/events.md"

// The key table of docs/reference/events.md is the encoder's keys in the encoder's order, each
// with the type the encoder writes.
func TestEventsReferenceKeys(t *testing.T) {
	e := fixed()
	e.SIPMessageLength, e.Tool, e.UASpoofed, e.RepeatCount = 70000, "sipvicious", true, 3
	e.Payload = []Payload{{Kind: "sqli", Where: "to"}}
	line, err := e.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var keys, types []string
	if _, err := dec.Token(); err != nil { // {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		switch v.(type) {
		case string:
			types = append(types, "string")
		case json.Number:
			types = append(types, "number")
		case bool:
			types = append(types, "boolean")
		case []any:
			types = append(types, "array")
		}
	}
	var docKeys, docTypes []string
	for _, row := range golden.MarkdownTable(t, eventsReference, "## The event object") {
		docKeys, docTypes = append(docKeys, row[0]), append(docTypes, row[1])
	}
	if !slices.Equal(docKeys, keys) {
		t.Errorf("docs/reference/events.md lists keys\n%v\nthe encoder writes\n%v", docKeys, keys)
	}
	if !slices.Equal(docTypes, types) {
		t.Errorf("docs/reference/events.md gives types\n%v\nthe encoder writes\n%v", docTypes, types)
	}
}

// The reference's example line is the encoder's golden output, byte for byte.
func TestEventsReferenceExample(t *testing.T) {
	doc, err := os.ReadFile(eventsReference)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/event.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append([]byte("```json\n"), want...)) {
		t.Errorf("docs/reference/events.md does not show testdata/event.golden as its example:\n%s", want)
	}
}
