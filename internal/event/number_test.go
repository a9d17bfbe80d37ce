package event

import "testing"

func TestValidNumber(t *testing.T) {
	for n, want := range map[string]bool{
		"4681234567": true, "+4681234567": true, "0": true, "100": true,
		"": false, "+": false, "++46": false, "46+1": false, "12a": false, " 12": false,
		"١٢٣":   false, // Arabic-Indic digits are not ASCII digits
		"admin": false, "NOT_FOUND": false,
	} {
		if got := ValidNumber(n); got != want {
			t.Errorf("ValidNumber(%q) = %v, want %v", n, got, want)
		}
	}
}

func TestNumbersMatch(t *testing.T) {
	const se = "+46812345678" // a Stockholm number in international form
	tests := []struct {
		a, b string
		want bool
		why  string
	}{
		{se, se, true, "identical"},
		{se, "46812345678", true, "without any prefix"},
		{se, "0046812345678", true, "ITU international prefix 00"},
		{se, "01146812345678", true, "North American 011"},
		{se, "901146812345678", true, "outside line 9 then 011"},
		{se, "90046812345678", true, "outside line 9 then 00"},
		{se, "00046812345678", true, "outside line 0 then 00"},
		{se, "946812345678", true, "outside line 9, no international prefix"},
		{se, "001146812345678", true, "Australian 0011"},
		{se, "81046812345678", true, "former Soviet 8~10"},
		{se, "981046812345678", true, "outside line 9 then 8~10"},
		{se, "0812345678", true, "national form with trunk prefix 0"},
		{se, "90812345678", true, "outside line 9 then national form"},
		{se, "812345678", true, "subscriber number alone"},
		// The prefixes of a real scan of a Swedish number: +, 900, 9011, 000 (and 9 + 000).
		{"+46812118532", "90046812118532", true, "seen in a scan: 900"},
		{"+46812118532", "901146812118532", true, "seen in a scan: 9011"},
		{"+46812118532", "00046812118532", true, "seen in a scan: 000"},
		{"+46812118532", "900046812118532", true, "seen in a scan: 9 then 000"},
		{"+46812118532", "0046812118532", true, "00"},
		{"900046812118532", "00046812118532", true, "two prefixed forms of one number"},
		{"900046812118532", "+44812118532", false, "9 000 46... is Swedish, not British"},
		{se, "+44812345678", false, "same digits in another country"},
		{se, "004412345678", false, "different number"},
		{se, "+4681234567", false, "one digit short"},
		{"+12125551234", "01112125551234", true, "NANP number via 011"},
		{"+12125551234", "12125551234", true, "NANP number with trunk 1"},
		{"+12125551234", "2125551234", true, "NANP ten-digit dialling"},
		{"+12125551234", "+442125551234", false, "same digits, UK"},
		{"+35312345678", "0035312345678", true, "three-digit country code"},
		{"+35312345678", "012345678", true, "Irish national form"},
		{"100", "100", true, "extension, exact"},
		{"100", "9100", false, "short numbers only match exactly"},
		{"100", "+100", false, "short numbers only match exactly"},
		{"12345", "0012345", false, "subscriber part too short"},
		{"admin", "admin", true, "non-numeric, exact"},
		{"admin", "9admin", false, "non-numeric never matches a prefixed form"},
	}
	for _, tt := range tests {
		if got := NumbersMatch(tt.a, tt.b); got != tt.want {
			t.Errorf("NumbersMatch(%q, %q) = %v, want %v (%s)", tt.a, tt.b, got, tt.want, tt.why)
		}
		if got := NumbersMatch(tt.b, tt.a); got != tt.want {
			t.Errorf("NumbersMatch(%q, %q) = %v, want %v (%s, reversed)", tt.b, tt.a, got, tt.want, tt.why)
		}
	}
}

func TestNumberKeysShortAndInvalid(t *testing.T) {
	for _, n := range []string{"", "100", "+44", "12345", "admin", "46 8123 4567", "NOT_FOUND"} {
		if k := NumberKeys(n); len(k) != 0 {
			t.Errorf("NumberKeys(%q) = %q, want none", n, k)
		}
		if k := NumberQueryKeys(n); len(k) != 0 {
			t.Errorf("NumberQueryKeys(%q) = %q, want none", n, k)
		}
	}
}

// FuzzNumberKeys checks that any input is handled and that the match is symmetric.
func FuzzNumberKeys(f *testing.F) {
	for _, s := range []string{"+46812345678", "0046812345678", "981046500729221", "100", "", "+", "0000000000"} {
		f.Add(s, "+46812345678")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if NumbersMatch(a, b) != NumbersMatch(b, a) {
			t.Fatalf("match of %q and %q is not symmetric", a, b)
		}
		for _, k := range NumberKeys(a) {
			if len(k) > len(a)+8 {
				t.Fatalf("key %q longer than its number %q allows", k, a)
			}
		}
	})
}
