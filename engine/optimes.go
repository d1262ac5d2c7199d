package engine

import "time"

// Op is a part of the forward pass whose time a step records when
// Options.OpTimes is set (StepRecord.Ops). The projections carry the
// names Hugging Face and vLLM give their weights.
type Op int

const (
	OpEmbed      Op = iota // token (and position) embeddings
	OpNorm                 // every LayerNorm and RMSNorm: the layers', q/k norms, the final one
	OpQProj                // q_proj
	OpKProj                // k_proj
	OpVProj                // v_proj
	OpRoPE                 // rotary position embedding of q and k
	OpKVWrite              // storing the step's keys and values in the cache
	OpAttention            // paged attention
	OpOProj                // o_proj
	OpAllReduce            // the tensor-parallel sums after o_proj and down_proj
	OpResidual             // the residual adds
	OpUpProj               // up_proj (GPT-2's c_fc)
	OpGateProj             // gate_proj
	OpActivation           // SiLU·up or GELU
	OpDownProj             // down_proj (GPT-2's c_proj)
	OpLMHead               // lm_head on the rows that sample
	OpLogits               // the logits' way to the host (and their all-gather under TP)
	numOps
)

var opNames = [numOps]string{"embed", "norm", "q_proj", "k_proj", "v_proj", "rope", "kv_write",
	"attention", "o_proj", "all_reduce", "residual", "up_proj", "gate_proj", "act", "down_proj",
	"lm_head", "logits"}

// String is the op's name, as benchmarks and traces print it.
func (o Op) String() string {
	if o < 0 || o >= numOps {
		return "op?"
	}
	return opNames[o]
}

// OpTimes is a step's time per op, indexed by Op.
type OpTimes [numOps]time.Duration

// Total is the sum over the ops.
func (t *OpTimes) Total() time.Duration {
	var s time.Duration
	for _, d := range t {
		s += d
	}
	return s
}

// opClock charges the time between consecutive laps to ops: one clock
// read per op. On a backend that queues its ops (compute/cuda), each lap
// first waits for the queue, so the times are the device's, and the step
// runs slower for it.
type opClock struct {
	on   bool
	sync func() error
	last time.Time
}

// syncer is a backend whose ops run asynchronously and can be waited for.
type syncer interface{ Sync() error }

// start begins timing a step's forward pass.
func (c *opClock) start() {
	if c.on {
		c.last = time.Now()
	}
}

// lap adds the time since the previous lap to op in ops.
func (c *opClock) lap(ops *OpTimes, op Op) {
	if !c.on {
		return
	}
	if c.sync != nil {
		_ = c.sync() // a failing queue fails the step's next Read too
	}
	now := time.Now()
	ops[op] += now.Sub(c.last)
	c.last = now
}
