import assert from "node:assert/strict";
import { join } from "node:path";
import {
  hellaswagPreprocess,
  isTaskName,
  loadTask,
  lowerFirst,
  TASK_NAMES,
  TASK_SPECS,
  taskExample,
  taskPath,
} from "./tasks.ts";

const haveShared = await Deno.stat(taskPath("copa")).then(() => true, () => false);

Deno.test("task specs: names, chance levels, headline metrics", () => {
  assert.equal(TASK_NAMES.length, 9);
  for (const name of TASK_NAMES) {
    const s = TASK_SPECS[name];
    assert.equal(s.name, name);
    assert.ok(isTaskName(name));
    assert.equal(s.chance, s.kind === "greedy" ? 0 : 1 / s.numChoices);
  }
  assert.equal(TASK_SPECS.hellaswag.primaryMetric, "acc_norm");
  assert.equal(TASK_SPECS.winogrande.primaryMetric, "acc");
  assert.ok(!isTaskName("mmlu"));
});

Deno.test("taskExample builds lm-eval's strings from each schema", () => {
  const arc = taskExample("arc_easy", {
    choices: ["a", "b", "c", "d"],
    query: "Question: Why?",
    gold: 2,
  }, 7);
  assert.deepEqual(arc, {
    index: 7,
    requests: ["a", "b", "c", "d"].map((c) => ({
      context: "Question: Why?\nAnswer:",
      continuation: ` ${c}`,
    })),
    choices: ["a", "b", "c", "d"],
    gold: 2,
  });
  const piqa = taskExample("piqa", { choices: ["x", "y"], gold: 1, query: "Question: goal\n" }, 0);
  assert.equal(piqa.requests[1].context, "Question: goal\nAnswer:");
  assert.equal(piqa.requests[1].continuation, " y");
  const boolq = taskExample("boolq", {
    query: "Passage: P.\nQuestion: is it?",
    choices: ["no", "yes"],
    gold: 1,
  }, 0);
  assert.deepEqual(boolq.requests, [
    { context: "P.\nQuestion: is it?\nAnswer:", continuation: " no" },
    { context: "P.\nQuestion: is it?\nAnswer:", continuation: " yes" },
  ]);
  const copa = taskExample("copa", {
    query: "My body cast a shadow, because",
    gold: 0,
    choices: ["The sun was rising.", "the grass was cut."],
  }, 0);
  assert.deepEqual(copa.requests, [
    { context: "My body cast a shadow because", continuation: " the sun was rising." },
    { context: "My body cast a shadow because", continuation: " the grass was cut." },
  ]);
  const obqa = taskExample("openbook_qa", {
    query: "Predators eat",
    choices: ["lions", "humans", "bunnies", "grass"],
    gold: 2,
  }, 0);
  assert.equal(obqa.requests[2].context, "Predators eat");
  assert.equal(obqa.requests[2].continuation, " bunnies");
  const hs = taskExample("hellaswag", {
    ctx: "Act: A man [header] is  here.",
    endings: ["e0", " e1 [step]", "e2", "e3"],
    label: 3,
  }, 0);
  assert.equal(hs.requests[0].context, "Act: A man is here.");
  assert.equal(hs.requests[1].continuation, " e1 "); // strip runs before the [..] removal
  assert.equal(hs.gold, 3);
  const wg = taskExample("winogrande", {
    context_options: ["So Sarah", "So Maria"],
    continuation: "got it.",
    gold: 1,
  }, 0);
  assert.deepEqual(wg.requests, [
    { context: "So Sarah", continuation: " got it." },
    { context: "So Maria", continuation: " got it." },
  ]);
  assert.deepEqual(wg.choices, ["So Sarah", "So Maria"]);
  const lam = taskExample("lambada_openai", { context: "I said", continuation: "hello" }, 0);
  assert.deepEqual(lam.requests, [{ context: "I said", continuation: " hello" }]);
  assert.equal(lam.gold, 0);
});

Deno.test("taskExample rejects records that do not follow the schema", () => {
  assert.throws(
    () => taskExample("arc_easy", { choices: ["a"], query: "Question: q", gold: 0 }, 0),
    /"choices"/,
  );
  assert.throws(
    () => taskExample("arc_easy", { choices: ["a", "b", "c", "d"], query: "Q: q", gold: 0 }, 0),
    /"query" should start with "Question: "/,
  );
  assert.throws(
    () => taskExample("copa", { query: "It rained", choices: ["a", "b"], gold: 0 }, 0),
    /because/,
  );
  assert.throws(
    () => taskExample("piqa", { query: "Question: q\n", choices: ["a", "b"], gold: 2 }, 0),
    /"gold".*0\.\.1/,
  );
  assert.throws(() => taskExample("lambada_openai", [], 0), /JSON object/);
});

Deno.test("preprocess helpers match lm-eval's", () => {
  assert.equal(hellaswagPreprocess(" a [title] b [x]c  d "), "a. b c d");
  assert.equal(lowerFirst("The sun."), "the sun.");
  assert.equal(lowerFirst(""), "");
});

Deno.test("loadTask: limit, errors naming the file and line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "copa.jsonl");
    const line = JSON.stringify({ query: "A, therefore", gold: 1, choices: ["B.", "C."] });
    await Deno.writeTextFile(path, `${line}\n${line}\n\n${line}\n`);
    assert.equal((await loadTask("copa", { dir })).examples.length, 3);
    const two = await loadTask("copa", { path, limit: 2 });
    assert.equal(two.examples.length, 2);
    assert.equal(two.examples[1].index, 1);
    assert.equal(two.spec, TASK_SPECS.copa);
    await assert.rejects(loadTask("copa", { path, limit: 0 }), RangeError);
    await Deno.writeTextFile(path, `${line}\n{"query": "A", "gold": 1, "choices": ["B", "C"]}\n`);
    await assert.rejects(loadTask("copa", { path }), (e: Error) => {
      assert.ok(e.message.startsWith(`${path}:2: "query" should end with`), e.message);
      return true;
    });
    await Deno.writeTextFile(path, `{oops\n`);
    await assert.rejects(loadTask("copa", { path }), (e: Error) => {
      assert.ok(e.message.startsWith(`${path}:1: malformed JSON line`), e.message);
      return true;
    });
    await assert.rejects(loadTask("copa", { dir: join(dir, "none") }), /does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** First record of each shared file: its first request and gold, as built by the loader. */
const FIRST: Record<string, { context: string; continuation: string; gold: number }> = {
  arc_easy: {
    context: "Question: Which statement best explains why photosynthesis is the foundation of " +
      "most food webs?\nAnswer:",
    continuation: " Sunlight is the source of energy for nearly all ecosystems.",
    gold: 0,
  },
  arc_challenge: {
    context: "Question: An astronomer observes that a planet rotates faster after a meteorite " +
      "impact. Which is the most likely effect of this increase in rotation?\nAnswer:",
    continuation: " Planetary density will decrease.",
    gold: 2,
  },
  openbook_qa: {
    context: "A person wants to start saving money so that they can afford a nice vacation at " +
      "the end of the year. After looking over their budget and expenses, they decide the best " +
      "way to save money is to",
    continuation: " make more phone calls",
    gold: 1,
  },
  piqa: {
    context: "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
    continuation: " Provide the guinea pig with a cage full of a few inches of bedding made of " +
      "ripped paper strips, you will also need to supply it with a water bottle and a food dish.",
    gold: 0,
  },
  copa: {
    context: "The man turned on the faucet therefore",
    continuation: " the toilet filled with water.",
    gold: 1,
  },
  winogrande: {
    context: "Sarah was a much better surgeon than Maria so Sarah",
    continuation: " always got the easier cases.",
    gold: 1,
  },
  lambada_openai: {
    context: "In my palm is a clear stone, and inside it is a small ivory statuette. A guardian " +
      "angel.\n\n\"Figured if you're going to be out at night getting hit by cars, you might as " +
      'well have some backup."\n\nI look at him, feeling stunned. Like this is some sort of ' +
      "sign. But as I stare at Harlin, his mouth curved in a confident grin, I don't care about",
    continuation: " signs",
    gold: 0,
  },
  hellaswag: {
    context: "Roof shingle removal: A man is sitting on a roof. he",
    continuation: " is using wrap to wrap a pair of skis.",
    gold: 3,
  },
};

Deno.test({
  name: "loadTask on the shared files: record counts of DATA.md, first records",
  ignore: !haveShared,
  fn: async () => {
    for (const name of TASK_NAMES) {
      const task = await loadTask(name);
      const spec = TASK_SPECS[name];
      assert.equal(task.examples.length, spec.records, name);
      for (const ex of task.examples) {
        assert.equal(ex.requests.length, spec.numChoices, `${name} #${ex.index}`);
        assert.equal(ex.choices.length, spec.numChoices);
        assert.ok(ex.gold >= 0 && ex.gold < spec.numChoices);
        for (const r of ex.requests) {
          assert.ok(r.continuation.startsWith(" ") && r.continuation.length > 1, name);
          assert.ok(r.context.length > 0 && r.context === r.context.trimEnd(), name);
        }
      }
      const first = task.examples[0];
      if (name === "boolq") {
        assert.ok(first.requests[0].context.startsWith("All biomass goes through"));
        assert.ok(
          first.requests[0].context.endsWith(
            "\nQuestion: does ethanol take more energy make that produces?\nAnswer:",
          ),
        );
        assert.deepEqual(first.requests.map((r) => r.continuation), [" no", " yes"]);
        assert.equal(first.gold, 0);
      } else {
        const want = FIRST[name];
        assert.deepEqual(
          { ...first.requests[0], gold: first.gold },
          want,
          `${name}: first record`,
        );
      }
    }
    // golds of BoolQ as DATA.md counts them
    const boolq = await loadTask("boolq");
    assert.equal(boolq.examples.filter((e) => e.gold === 1).length, 2033);
    // every WinoGrande example scores one continuation under two contexts
    const wg = await loadTask("winogrande", { limit: 50 });
    assert.equal(wg.examples.length, 50);
    for (const e of wg.examples) {
      assert.equal(e.requests[0].continuation, e.requests[1].continuation);
    }
  },
});
