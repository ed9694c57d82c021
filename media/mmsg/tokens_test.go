package mmsg

import "testing"

func TestTokensReuse(t *testing.T) {
	var tk Tokens[*int]
	a, b, c := new(int), new(int), new(int)
	ia, ib := tk.Add(a), tk.Add(b)
	if ia != 0 || ib != 1 || tk.At(ia) != a || tk.At(ib) != b {
		t.Fatalf("tokens %d %d hold %v %v", ia, ib, tk.At(ia), tk.At(ib))
	}
	tk.Remove(ia)
	if tk.At(ia) != nil {
		t.Fatal("a removed token still holds its value")
	}
	if ic := tk.Add(c); ic != ia || tk.At(ic) != c {
		t.Fatalf("c got token %d, want the freed %d", ic, ia)
	}
	if tk.At(WakeToken) != nil || tk.At(99) != nil {
		t.Fatal("an unknown token holds a value")
	}
	if all := tk.All(); len(all) != 2 || all[0] != c || all[1] != b {
		t.Fatalf("All = %v, want [c b]", all)
	}
	tk.Reset()
	if tk.At(0) != nil || len(tk.All()) != 0 {
		t.Fatal("Reset kept values")
	}
}
