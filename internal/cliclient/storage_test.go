package cliclient

import (
	"strings"
	"testing"
)

func TestParseVolumes(t *testing.T) {
	vms, err := ParseVolumes([]string{"data:/data,per-instance", "logs:/var/log"})
	if err != nil || len(vms) != 2 || !vms[0].GetPerInstance() || vms[0].GetName() != "data" || vms[0].GetPath() != "/data" || vms[1].GetPerInstance() {
		t.Fatalf("ParseVolumes = %v, %v", vms, err)
	}
	for flag, want := range map[string]string{
		"data:/data,per-instanse": `invalid --volume "data:/data,per-instanse": unknown option "per-instanse" (the one option is per-instance)`,
		"data:/data,":             `unknown option ""`,
		"data,per-instance":       `invalid --volume "data,per-instance": want NAME:/PATH[,per-instance]`,
		"Data:/data,per-instance": `the volume name "Data" does not start with a lowercase letter`,
		"data:data,per-instance":  `the guest path "data" is not absolute`,
	} {
		if _, err := ParseVolumes([]string{flag}); err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--volume %s: %v, want one line with %q", flag, err, want)
		}
	}
}
