package configs

import (
	"reflect"
	"strings"
	"testing"
)

// survivalPhones are three phones; cases append keys to them.
const survivalPhones = `phones:
  - user: alice
    password: p
    twilio_password: t
    extension: "201"
  - user: bob
    password: p
    twilio_password: t
    extension: "202"
  - user: "301"
    password: p
    twilio_password: t
`

func TestParseLocalCallsProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"extension taken by another phone", minimal + strings.Replace(survivalPhones, `extension: "202"`, `extension: "201"`, 1), []string{
			`c.yaml:13: phones[1].extension: extension 201 is also alice's (line 9) (hint: give each phone its own extension)`,
		}},
		{"extension is another user's name", minimal + strings.Replace(survivalPhones, `extension: "202"`, `extension: "301"`, 1), []string{
			`c.yaml:13: phones[1].extension: extension 301 is the name of user 301 (line 14): a call to 301 could not tell them apart (hint: pick an extension that is no user's name)`,
		}},
		{"extension is another user's name, unquoted", minimal + `phones:
  - user: "7"
    password: p
    twilio_password: t
  - user: bob
    password: p
    twilio_password: t
    extension: 7
`, []string{
			`c.yaml:12: phones[1].extension: extension 7 is the name of user 7 (line 6): a call to 7 could not tell them apart (hint: pick an extension that is no user's name)`,
		}},
		{"extension not digits", minimal + strings.Replace(survivalPhones, `extension: "202"`, `extension: "2O2"`, 1), []string{
			`c.yaml:13: phones[1].extension: "2O2" is not an extension (hint: digits, e.g. "201")`,
		}},
		{"extension too long", minimal + strings.Replace(survivalPhones, `extension: "202"`, `extension: "1234567890123456"`, 1), []string{
			`c.yaml:13: phones[1].extension: "1234567890123456" is not an extension (hint: digits, e.g. "201")`,
		}},
		{"extension is an emergency number", minimal + strings.Replace(survivalPhones, `extension: "202"`, `extension: "911"`, 1) + `calls:
  emergency_numbers: ["911"]
`, []string{
			`c.yaml:13: phones[1].extension: extension 911 is an emergency number (calls.emergency_numbers): it must always reach the emergency services (hint: pick another extension)`,
		}},
		{"user is an emergency number", minimal + strings.Replace(survivalPhones, `user: "301"`, `user: "112"`, 1) + `calls:
  emergency_numbers: ["112"]
`, []string{
			`c.yaml:14: phones[2].user: user 112 is an emergency number (calls.emergency_numbers): it must always reach the emergency services (hint: rename the user)`,
		}},
		{"calls.local", minimal + "calls:\n  local: sometimes\n", []string{
			`c.yaml:6: calls.local: "sometimes" is not one of when_twilio_down, always, never`,
		}},
		{"fallback targets", minimal + `calls:
  fallback_targets:
    - uri: sip:carrier@192.0.2.30:5060
    - uri: sips:192.0.2.31
    - uri: sip:192.0.2.32;transport=tls
    - uri: sip:192.0.2.33
      priority: -1
    - weight: 1
`, []string{
			`c.yaml:7: calls.fallback_targets[0].uri: "sip:carrier@192.0.2.30:5060" names user "carrier": a fallback target gets the number dialled as the user part (hint: write the target without a user, e.g. sip:192.0.2.30:5060)`,
			`c.yaml:8: calls.fallback_targets[1].uri: "sips:192.0.2.31": scheme "sips": only sip: targets are supported (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
			`c.yaml:9: calls.fallback_targets[2].uri: "sip:192.0.2.32;transport=tls": transport "tls": use udp or tcp (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
			`c.yaml:11: calls.fallback_targets[3].priority: -1 is outside 0..65535`,
			`c.yaml:12: calls.fallback_targets[4].uri: required (hint: e.g. sip:alice@192.0.2.20:5060;transport=tcp)`,
		}},
		{"emergency numbers", minimal + `calls:
  emergency_numbers: ["911", "11 2", "911", "+112", [1]]
`, []string{
			`c.yaml:6: calls.emergency_numbers[4]: must be a string, not a list`,
			`c.yaml:6: calls.emergency_numbers[1]: "11 2" is not a number (hint: digits only, e.g. ["911", "112"])`,
			`c.yaml:6: calls.emergency_numbers[2]: 911 is listed twice (also calls.emergency_numbers[0])`,
			`c.yaml:6: calls.emergency_numbers[3]: "+112" is not a number (hint: digits only, e.g. ["911", "112"])`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			got := problemsOf(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestParseLocalCallsValues(t *testing.T) {
	c, err := Parse("c.yaml", []byte(minimal+survivalPhones+`calls:
  local: always
  fallback_targets:
    - uri: sip:192.0.2.30:5060;transport=tcp
      priority: 1
    - uri: sip:gw.example.com
  emergency_numbers: ["911", "112"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Phones[0].Extension != "201" || c.Phones[1].Extension != "202" || c.Phones[2].Extension != "" {
		t.Errorf("extensions = %q %q %q", c.Phones[0].Extension, c.Phones[1].Extension, c.Phones[2].Extension)
	}
	want := Calls{MaxPerUser: 4, Local: LocalAlways,
		FallbackTargets: []Target{
			{URI: "sip:192.0.2.30:5060;transport=tcp", Priority: 1, Weight: 10},
			{URI: "sip:gw.example.com", Priority: 10, Weight: 10},
		},
		EmergencyNumbers: []string{"911", "112"},
	}
	if !reflect.DeepEqual(c.Calls, want) {
		t.Errorf("calls = %+v, want %+v", c.Calls, want)
	}

	d, err := Parse("c.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if d.Calls.Local != LocalWhenTwilioDown || d.Calls.FallbackTargets != nil || d.Calls.EmergencyNumbers != nil {
		t.Errorf("defaults: %+v", d.Calls)
	}
	if got := Diff(d, c); !holdsAll(got, "calls.local", "calls.fallback_targets", "calls.emergency_numbers", "phones[alice]") {
		t.Errorf("Diff = %v", got)
	}
}

// holdsAll reports whether got holds every one of want.
func holdsAll(got []string, want ...string) bool {
	for _, w := range want {
		if !contains(got, w) {
			return false
		}
	}
	return true
}
