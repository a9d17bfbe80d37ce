package peer

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestKeyIsCreatedPrivateAndStable(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	id1, _ := ID(k1)
	id2, _ := ID(k2)
	if id1 != id2 || id1 == "" {
		t.Errorf("peer ID changed across loads: %s, %s", id1, id2)
	}
	if k1.Type() != crypto.Ed25519 {
		t.Errorf("key type %v", k1.Type())
	}
}

func TestKeyFileProblemsAreClear(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := LoadKey(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged key: %v", err)
	}
	if _, err := LoadKey(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v", err)
	}
}

func testEvent(now time.Time) *event.Event {
	o := event.Origin{
		AppVersion: "1.0.0", NodeID: "0b9f4c3e-8c2c-445b-8661-50a70fa9e873", Method: event.Responsive, Transport: event.UDP,
		Source: netip.MustParseAddrPort("192.0.2.7:5070"), Dest: netip.MustParseAddrPort("198.51.100.1:5060"),
	}
	return event.New(o, now, "0046812118532", "INVITE", "friendly-scanner", []byte("INVITE sip:0046812118532@x SIP/2.0\r\n\r\n"))
}

func TestSealOpenRoundTrip(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(nil)
	want, _ := ID(key)
	now := time.Now()
	e := testEvent(now)
	data, err := Seal(e, key)
	if err != nil {
		t.Fatal(err)
	}
	got, signer, err := Open(data, now, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if signer != want {
		t.Errorf("signer %s, want %s", signer, want)
	}
	if !got.FromPeer {
		t.Error("opened event not marked FromPeer")
	}
	got.FromPeer = false
	a, _ := e.AppendJSON(nil)
	b, _ := got.AppendJSON(nil)
	if !bytes.Equal(a, b) {
		t.Errorf("event changed on the way:\n%s\n%s", a, b)
	}
}

func TestOpenRejects(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(nil)
	other, _, _ := crypto.GenerateEd25519Key(nil)
	now := time.Now()
	sealed := func(mod func(*event.Event)) []byte {
		e := testEvent(now)
		mod(e)
		b, err := e.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		env, err := record.Seal(&eventRecord{json: b}, key)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := env.Marshal()
		return out
	}
	good := sealed(func(*event.Event) {})

	// A relay that changes a byte of the payload: the signature no longer verifies.
	tampered := bytes.Replace(good, []byte("0046812118532"), []byte("0046812118533"), 1)
	// Someone else's key over our payload, with our public key swapped in: still fails.
	env, _ := record.Seal(&eventRecord{json: []byte(`{}`)}, other)
	forged, _ := env.Marshal()
	forged = bytes.Replace(forged, mustPub(t, other), mustPub(t, key), 1)
	// Another libp2p record type signed by a valid key (a peer record), not an event.
	wrongDomain := sealedOther(t, key)

	for _, c := range []struct {
		name, reason string
		data         []byte
	}{
		{"oversized", ReasonSize, make([]byte, MaxEnvelope+1)},
		{"garbage", ReasonSignature, []byte("\x00\x01garbage")},
		{"tampered field", ReasonSignature, tampered},
		{"forged signature", ReasonSignature, forged},
		{"other record type", ReasonSignature, wrongDomain},
		{"not an event", ReasonSchema, sealedRaw(t, key, `[1,2,3]`)},
		{"bad uuid", ReasonSchema, sealed(func(e *event.Event) { e.UUID = "x" })},
		{"bad node id", ReasonSchema, sealed(func(e *event.Event) { e.NodeID = "" })},
		{"bad transport", ReasonSchema, sealed(func(e *event.Event) { e.Transport = "SCTP" })},
		{"bad method", ReasonSchema, sealed(func(e *event.Event) { e.SIPMethod = "INVITE sip:x" })},
		{"bad collected", ReasonSchema, sealed(func(e *event.Event) { e.CollectedMethod = "peer" })},
		{"port", ReasonSchema, sealed(func(e *event.Event) { e.SourcePort = 70000 })},
		{"huge agent", ReasonSchema, sealed(func(e *event.Event) { e.SIPUserAgent = strings.Repeat("a", 9000) })},
		{"future", ReasonTime, sealed(func(e *event.Event) { e.Timestamp = event.FormatTime(now.Add(time.Hour)) })},
		{"ancient", ReasonTime, sealed(func(e *event.Event) { e.Timestamp = event.FormatTime(now.AddDate(-1, 0, 0)) })},
		{"bad time", ReasonTime, sealed(func(e *event.Event) { e.Timestamp = "yesterday" })},
		{"source not IP", ReasonIP, sealed(func(e *event.Event) { e.SourceIP = "example.com" })},
		{"source with port", ReasonIP, sealed(func(e *event.Event) { e.SourceIP = "192.0.2.7:5060" })},
		{"source unspecified", ReasonIP, sealed(func(e *event.Event) { e.SourceIP = "0.0.0.0" })},
		{"source not canonical", ReasonIP, sealed(func(e *event.Event) { e.SourceIP = "2001:DB8::1" })},
		{"dest not IP", ReasonIP, sealed(func(e *event.Event) { e.DestinationIP = "x" })},
		{"number control", ReasonNumber, sealed(func(e *event.Event) { e.CalledNumber = "123\n456" })},
		{"number huge", ReasonNumber, sealed(func(e *event.Event) { e.CalledNumber = strings.Repeat("1", 2000) })},
	} {
		_, _, err := Open(c.data, now, Limits{})
		if got := ReasonOf(err); got != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.reason)
		}
	}
	// What honest capture produces passes: garbage packets have no number or method.
	for _, mod := range []func(*event.Event){
		func(e *event.Event) { e.CalledNumber, e.SIPMethod, e.SIPUserAgent = "", "", "" },
		func(e *event.Event) { e.CalledNumber = "100' OR '1'='1" },
		func(e *event.Event) { e.SourceIP = "2001:db8::7"; e.DestinationIP = "" },
	} {
		if _, _, err := Open(sealed(mod), now, Limits{}); err != nil {
			t.Errorf("honest event rejected: %v", err)
		}
	}
}

func mustPub(t *testing.T, k crypto.PrivKey) []byte {
	b, err := crypto.MarshalPublicKey(k.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sealedRaw(t *testing.T, key crypto.PrivKey, payload string) []byte {
	env, err := record.Seal(&eventRecord{json: []byte(payload)}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := env.Marshal()
	return b
}

type otherRecord struct{}

func (otherRecord) Domain() string                 { return "libp2p-peer-record" }
func (otherRecord) Codec() []byte                  { return []byte{0x03, 0x01} }
func (otherRecord) MarshalRecord() ([]byte, error) { return []byte(`{"x":1}`), nil }
func (otherRecord) UnmarshalRecord([]byte) error   { return nil }

func sealedOther(t *testing.T, key crypto.PrivKey) []byte {
	env, err := record.Seal(otherRecord{}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := env.Marshal()
	return b
}

// FuzzOpen: no input crashes Open, and whatever it accepts passes the checks again after a
// round trip through Seal.
func FuzzOpen(f *testing.F) {
	key, _, _ := crypto.GenerateEd25519Key(nil)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	good, _ := Seal(testEvent(now), key)
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		e, _, err := Open(data, now, Limits{})
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		again, err := Seal(e, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Open(again, now, Limits{}); err != nil {
			t.Fatalf("accepted event fails after resealing: %v", err)
		}
	})
}
