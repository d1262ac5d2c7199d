package planner

import (
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
)

//go:embed shapes/*.json
var shapes embed.FS

// ErrUnknownModel is wrapped when a preset or shape name is not known.
var ErrUnknownModel = errors.New("unknown model")

// PublicShapes lists the embedded public model shapes.
func PublicShapes() []string {
	entries, _ := shapes.ReadDir("shapes")
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".json"))
	}
	return out
}

// LoadModel returns a model's config from a model directory (or a
// config.json file) when dir is set, else the named preset or public
// shape (case-insensitive), and the name to show for it.
func LoadModel(dir, name string) (*model.Config, string, error) {
	if dir != "" {
		path := dir
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			path = filepath.Join(dir, "config.json")
		}
		c, err := model.LoadConfig(path)
		if err != nil {
			return nil, "", err
		}
		return c, filepath.Base(filepath.Clean(dir)), nil
	}
	if p, err := preset.Get(name); err == nil {
		c, err := p.Config()
		return c, p.Name, err
	}
	for _, s := range PublicShapes() {
		if strings.EqualFold(s, name) {
			b, err := shapes.ReadFile("shapes/" + s + ".json")
			if err != nil {
				return nil, "", err
			}
			c, err := model.ParseConfig(b)
			if err != nil {
				return nil, "", fmt.Errorf("shape %s: %w", s, err)
			}
			return c, s, nil
		}
	}
	known := append(preset.Names(), PublicShapes()...)
	slices.Sort(known)
	return nil, "", fmt.Errorf("%w %q (known: %s)", ErrUnknownModel, name, strings.Join(known, ", "))
}
