package peer

import "testing"

func TestSeenEvents(t *testing.T) {
	s := newSeenEvents(2)
	steps := []struct {
		id, data, want string
	}{
		{"a", "x", ""},
		{"a", "x", ReasonDuplicate},
		{"a", "y", ReasonConflict},
		{"b", "x", ""}, // another event may carry the same bytes elsewhere: ids differ
		{"c", "z", ""}, // evicts a
		{"a", "y", ""},
		{"c", "z", ReasonDuplicate},
	}
	for i, st := range steps {
		if got := ReasonOf(s.add(st.id, []byte(st.data))); got != st.want {
			t.Errorf("step %d add(%s, %s): %q, want %q", i, st.id, st.data, got, st.want)
		}
	}
}
