package eventio

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
)

// decodeStd is what readJSONLines did for every line before decodeFlat.
func decodeStd(b []byte) (Record, bool) {
	rec := Record{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		return nil, false
	}
	return rec, true
}

// checkFlat fails when decodeFlat takes a line and decodes it otherwise than encoding/json.
func checkFlat(t *testing.T, line []byte) bool {
	t.Helper()
	rec := Record{}
	if !decodeFlat(line, rec) {
		return false // encoding/json decodes it
	}
	want, ok := decodeStd(line)
	if !ok || !reflect.DeepEqual(rec, want) {
		t.Fatalf("decodeFlat(%q) = %#v, encoding/json: %#v (ok %v)", line, rec, want, ok)
	}
	return true
}

var flatSeeds = []string{
	`{"app_name":"dialtrap","event_timestamp":"2026-11-23 10:00:00.000000000","source_port":5060,"source_verified":true,"tool":null}`,
	`{"sip_message":"INVITE sip:100@x SIP/2.0\r\nVia: a\\b \"q\" \/ \u00e9 \u0000 \t\b\f","n":-1.5e+10}`,
	` { "a" : "b" , "a" : "c" } `,
	`{}`, `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d"}`, `{"a":"é ✓ 😀"}`, "{\"a\":\"\xff\"}", "{\"a\":\"\x01\"}",
	`{"a":[1,2]}`, `{"a":{"b":1}}`, `{"a":1} x`, `{"a":1}{"b":2}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`,
	`{"a":tru}`, `{"a":"x}`, `{"a" "b"}`, `{a:1}`, `{"a":1,}`, `["a"]`, `"a"`, `null`, ``, `{"a":"\x"}`, `{"a":"\u12"}`,
	`{"payload":[{"kind":"sqli","where":"to"}],"tool":"sipvicious"}`, `{"A":"x","a":"y"}`, `{"a":0.5E-3,"b":-0}`,
}

func TestDecodeFlatMatchesEncodingJSON(t *testing.T) {
	taken := 0
	for _, s := range flatSeeds {
		if checkFlat(t, []byte(s)) {
			taken++
		}
	}
	if taken < 7 {
		t.Errorf("decodeFlat took only %d of the seeds", taken)
	}
	// Lines with a byte changed, dropped or doubled, as a damaged log has them.
	const alphabet = "\"\\{}[],:0123456789.eE+-tfnu abx\xff\x01"
	r := rand.New(rand.NewPCG(1, 2))
	for range 50_000 {
		b := []byte(flatSeeds[r.IntN(len(flatSeeds))])
		for range 1 + r.IntN(3) {
			if len(b) == 0 {
				break
			}
			k := r.IntN(len(b))
			switch r.IntN(3) {
			case 0:
				b[k] = alphabet[r.IntN(len(alphabet))]
			case 1:
				b = append(b[:k], b[k+1:]...)
			default:
				b = append(b[:k+1], b[k:]...)
			}
		}
		checkFlat(t, b)
	}
}

func FuzzDecodeFlat(f *testing.F) {
	for _, s := range flatSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFlat(t, b) })
}
