package peer

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/dialtrap/dialtrap/internal/trust"
)

// docs/reference/peer-protocol.md names the identifiers and limits the code uses: a change
// of either without the other fails here.
func TestPeerProtocolReference(t *testing.T) {
	const path = "../../docs/reference/peer-protocol.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	lim := Limits{}.withDefaults()
	for _, want := range []string{
		"`" + Topic + "`",
		"`" + string(CatchupProtocol) + "`",
		"`" + string(dhtPrefix) + "`",
		"`" + envelopeDomain + "`",
		"`" + string(envelopeCodec) + "`",
		"256 KiB (262,144 bytes)", // MaxEnvelope, checked below
		"at most 500",
		"after 10 refused items",
		"after\n1,000,000 events",
		"takes over 60 s",
		"at most 4 pages at once",
		"more than 30 days old or more than 5 minutes ahead",
		"(at most 20,000 events or 64 MiB",
		"`StrictNoSign`",
		"SHA-256 of\nits data",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
	if MaxEnvelope != 262144 || catchupPage != 500 || catchupMaxBad != 10 || catchupMaxEvents != 1_000_000 ||
		catchupTimeout.Seconds() != 60 || catchupServeSlots != 4 || lim.MaxAge.Hours() != 30*24 || lim.MaxFuture.Minutes() != 5 {
		t.Errorf("a limit changed: update %s", path)
	}
	if trust.DefaultMaxPending != 20000 || trust.DefaultMaxPendingBytes != 64<<20 {
		t.Errorf("the trust gate's bounds changed: update %s", path)
	}

	var reasons []string
	for _, row := range golden.MarkdownTable(t, path, "## What a receiver checks") {
		reasons = append(reasons, row[0])
	}
	want := []string{ReasonSize, ReasonSignature, ReasonSchema, ReasonTime, ReasonIP, ReasonNumber, ReasonRate, ReasonOwn, ReasonDuplicate, ReasonConflict}
	if !reflect.DeepEqual(reasons, want) {
		t.Errorf("%s lists refusal reasons %v, the code has %v", path, reasons, want)
	}

	for _, typ := range []reflect.Type{reflect.TypeFor[Report](), reflect.TypeFor[PeerInfo]()} {
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag != "" && tag != "-" && !strings.Contains(doc, "`"+tag+"`") {
				t.Errorf("%s lacks the /peers key %q", path, tag)
			}
		}
	}
}
