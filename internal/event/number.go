package event

import "strings"

// Number matching.
//
// A scanner that found a weak PBX tries one subscriber number behind many prefixes: "+46...",
// "0046...", "900 46...", "9011 46...", "000 46...", "9000 46...", "9 810 46...". A PBX that asks whether a
// number its user dials is known-bad wants all of those to count as the same number. The
// national match reads a dialled string every way it could have been meant, as a (country
// code, subscriber number) pair with the country code possibly unknown, and two numbers match
// when some reading of each has the same subscriber number and country codes that agree (equal,
// or one of them unknown). The store keeps the keys NumberKeys returns beside each number, so
// a lookup is a few index probes with the keys NumberQueryKeys returns.

// minSubscriberDigits is the shortest subscriber number a prefix may be stripped down to:
// shorter remainders (extensions like 100, service codes) only ever match exactly.
const minSubscriberDigits = 6

// outsideLinePrefixes are what PBX users dial first to get an outside line.
var outsideLinePrefixes = []string{"", "9", "0"}

// internationalPrefixes are international access codes: ITU's 00, North America's 011,
// Australia's 0011, Japan's 010 and the former Soviet 8~10, and 000, which scanners put before
// a foreign number as often as 00 (a scan of a Swedish number seen by a commercial honeynet
// used +, 900, 9011 and 000 alike).
var internationalPrefixes = []string{"00", "000", "011", "0011", "010", "810"}

// twoDigitCountryCodes are the ITU-T E.164 country codes of two digits. Codes starting with 1
// or 7 have one digit, and every other code has three; the codes are prefix-free, so this is
// enough to split a country code from an international number.
var twoDigitCountryCodes = map[string]bool{
	"20": true, "27": true, "30": true, "31": true, "32": true, "33": true, "34": true, "36": true,
	"39": true, "40": true, "41": true, "43": true, "44": true, "45": true, "46": true, "47": true,
	"48": true, "49": true, "51": true, "52": true, "53": true, "54": true, "55": true, "56": true,
	"57": true, "58": true, "60": true, "61": true, "62": true, "63": true, "64": true, "65": true,
	"66": true, "81": true, "82": true, "84": true, "86": true, "90": true, "91": true, "92": true,
	"93": true, "94": true, "95": true, "98": true,
}

// ValidNumber reports whether n has the form the API accepts for a number: an optional leading
// '+' and one or more ASCII digits.
func ValidNumber(n string) bool {
	n = strings.TrimPrefix(n, "+")
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}

// reading is one way to understand a dialled string: a country code ("" when unknown) and the
// subscriber number after it.
type reading struct{ cc, subscriber string }

// readings lists the ways n could have been meant. Numbers that are not ValidNumber, and
// remainders shorter than minSubscriberDigits, have none.
func readings(n string) []reading {
	if !ValidNumber(n) {
		return nil
	}
	var out []reading
	add := func(r reading, ok bool) {
		if ok && len(r.subscriber) >= minSubscriberDigits {
			for _, o := range out {
				if o == r {
					return
				}
			}
			out = append(out, r)
		}
	}
	if rest, ok := strings.CutPrefix(n, "+"); ok {
		add(international(rest))
		return out
	}
	for _, line := range outsideLinePrefixes {
		d, ok := strings.CutPrefix(n, line)
		if !ok || d == "" {
			continue
		}
		for _, p := range internationalPrefixes {
			if rest, ok := strings.CutPrefix(d, p); ok {
				add(international(rest))
			}
		}
		if len(d) > 1 && d[0] == '0' && d[1] != '0' { // national trunk prefix
			add(reading{subscriber: d[1:]}, true)
		}
		if d[0] != '0' { // no prefix at all: international without access code, or national
			add(international(d))
			add(reading{subscriber: d}, true)
		}
	}
	return out
}

// international splits a number dialled after an international prefix into country code and
// subscriber number.
func international(d string) (reading, bool) {
	if d == "" || d[0] == '0' {
		return reading{}, false
	}
	n := 3
	switch {
	case d[0] == '1' || d[0] == '7':
		n = 1
	case len(d) >= 2 && twoDigitCountryCodes[d[:2]]:
		n = 2
	}
	if len(d) <= n {
		return reading{}, false
	}
	return reading{cc: d[:n], subscriber: d[n:]}, true
}

// NumberKeys returns the national-match keys a store keeps for a called number (none for
// numbers too short or not made of digits: those only match exactly).
func NumberKeys(n string) []string {
	var keys []string
	for _, r := range readings(n) {
		keys = appendKey(keys, "n:"+r.subscriber)
		if r.cc != "" {
			keys = appendKey(keys, "c:"+r.cc+":"+r.subscriber)
		} else {
			keys = appendKey(keys, "u:"+r.subscriber)
		}
	}
	return keys
}

// NumberQueryKeys returns the keys to look up for a national match of n: a stored number
// matches when any of its NumberKeys is among them.
func NumberQueryKeys(n string) []string {
	var keys []string
	for _, r := range readings(n) {
		if r.cc == "" {
			keys = appendKey(keys, "n:"+r.subscriber) // any country code will do
			continue
		}
		keys = appendKey(keys, "c:"+r.cc+":"+r.subscriber) // the same country code
		keys = appendKey(keys, "u:"+r.subscriber)          // or a number dialled nationally
	}
	return keys
}

func appendKey(keys []string, k string) []string {
	for _, have := range keys {
		if have == k {
			return keys
		}
	}
	return append(keys, k)
}

// NumbersMatch reports whether a and b are the same number under the national match: equal,
// or sharing a key. The store does the same with an index; this is its reference.
func NumbersMatch(a, b string) bool {
	if a == b {
		return true
	}
	q := NumberQueryKeys(a)
	for _, k := range NumberKeys(b) {
		for _, want := range q {
			if k == want {
				return true
			}
		}
	}
	return false
}
