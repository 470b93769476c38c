package main

import "testing"

func TestParseReservedMemory(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": -1, "2Gi": 2 << 30, "512Mi": 512 << 20, "1048576": 1 << 20} {
		if got, err := parseReservedMemory(in); err != nil || got != want {
			t.Errorf("parseReservedMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseReservedMemory("lots"); err == nil {
		t.Error("parseReservedMemory(\"lots\") accepted it")
	}
}
