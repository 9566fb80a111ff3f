// One JS client of sollol's compatibility suite, run by tests/compat/test_compat.py:
//   node run.mjs <ollama-js|openai-js> <gateway url> <model> <call>[,<call>...]
// makes each call through the official client and prints one JSON object: {call: {ok: observation} or
// {error: message}}. The observations have the same shape as the Python clients' (tests/compat/clients.py),
// and the Python side checks them.
import { Ollama } from "ollama";
import OpenAI from "openai";

const [clientName, url, model, callList] = process.argv.slice(2);
const MESSAGES = [{ role: "user", content: "Tell me about the sea." }];
const TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const SCHEMA = { type: "object", properties: { answer: { type: "string" } }, required: ["answer"] };
const PREDICT = 5;
const SHORT = { num_predict: 8, temperature: 0, seed: 1 };

function vectors(list) {
  return { count: list.length, dims: list.map((v) => v.length), distinct: new Set(list.map((v) => v.join())).size === list.length };
}

async function ollamaCalls(call) {
  const client = new Ollama({ host: url });
  switch (call) {
    case "chat":
      return { text: (await client.chat({ model, messages: MESSAGES, options: SHORT })).message.content };
    case "chat_stream": {
      let text = "";
      for await (const part of await client.chat({ model, messages: MESSAGES, options: SHORT, stream: true })) text += part.message.content;
      return { text };
    }
    case "generate":
      return { text: (await client.generate({ model, prompt: "Once upon a time", options: SHORT })).response };
    case "generate_stream": {
      let text = "";
      for await (const part of await client.generate({ model, prompt: "Once upon a time", options: SHORT, stream: true })) text += part.response;
      return { text };
    }
    case "tools": {
      const reply = await client.chat({ model, messages: MESSAGES, tools: [TOOL], options: SHORT });
      return { text: reply.message.content, tool_calls: (reply.message.tool_calls || []).length };
    }
    case "options": {
      const reply = await client.chat({ model, messages: MESSAGES, options: { num_predict: PREDICT, temperature: 0, seed: 1 } });
      return { tokens: reply.eval_count };
    }
    case "structured":
      return { text: (await client.chat({ model, messages: MESSAGES, format: SCHEMA, options: SHORT })).message.content };
    case "list":
      return { models: (await client.list()).models.map((m) => m.model) };
    case "show":
      return { format: (await client.show({ model })).details.format };
    case "ps":
      await client.generate({ model, prompt: "Hi", options: { num_predict: 1 } });
      return { models: (await client.ps()).models.map((m) => m.model) };
    case "embed":
      return vectors((await client.embed({ model, input: ["the sea", "a mountain"] })).embeddings);
    case "embed_legacy":
      return vectors([(await client.embeddings({ model, prompt: "the sea" })).embedding]);
    case "pull": {
      const statuses = [];
      for await (const part of await client.pull({ model, stream: true })) statuses.push(part.status);
      return { statuses };
    }
    case "unload": {
      await client.generate({ model, prompt: "Hi", options: { num_predict: 1 } });
      const reply = await client.generate({ model, prompt: "", keep_alive: 0 });
      return { done_reason: reply.done_reason, ps: (await client.ps()).models.map((m) => m.model) };
    }
  }
  throw new Error(`no such call ${call}`);
}

async function openaiCalls(call) {
  const client = new OpenAI({ baseURL: url + "/v1", apiKey: "unused" });
  const short = { max_tokens: 8, temperature: 0, seed: 1 };
  switch (call) {
    case "chat":
      return { text: (await client.chat.completions.create({ model, messages: MESSAGES, ...short })).choices[0].message.content };
    case "chat_stream": {
      let text = "";
      for await (const chunk of await client.chat.completions.create({ model, messages: MESSAGES, stream: true, ...short }))
        text += chunk.choices[0]?.delta?.content || "";
      return { text };
    }
    case "generate":
      return { text: (await client.completions.create({ model, prompt: "Once upon a time", ...short })).choices[0].text };
    case "generate_stream": {
      let text = "";
      for await (const chunk of await client.completions.create({ model, prompt: "Once upon a time", stream: true, ...short }))
        text += chunk.choices[0]?.text || "";
      return { text };
    }
    case "tools": {
      const message = (await client.chat.completions.create({ model, messages: MESSAGES, tools: [TOOL], ...short })).choices[0].message;
      return { text: message.content || "", tool_calls: (message.tool_calls || []).length };
    }
    case "options": {
      const reply = await client.chat.completions.create({ model, messages: MESSAGES, max_tokens: PREDICT, temperature: 0, seed: 1 });
      return { tokens: reply.usage.completion_tokens };
    }
    case "structured": {
      const response_format = { type: "json_schema", json_schema: { name: "answer", schema: SCHEMA } };
      return { text: (await client.chat.completions.create({ model, messages: MESSAGES, response_format, ...short })).choices[0].message.content };
    }
    case "list": {
      const models = [];
      for await (const m of client.models.list()) models.push(m.id);
      return { models };
    }
    case "show":
      return { id: (await client.models.retrieve(model)).id };
    case "embed":
      return vectors((await client.embeddings.create({ model, input: ["the sea", "a mountain"] })).data.map((d) => d.embedding));
    case "responses": {
      const reply = await client.responses.create({ model, input: "Tell me about the sea.", max_output_tokens: 16 });
      let streamed = "";
      for await (const event of await client.responses.create({ model, input: "Tell me about the sea.", max_output_tokens: 16, stream: true }))
        if (event.type === "response.output_text.delta") streamed += event.delta;
      return { text: reply.output_text, stream_text: streamed };
    }
  }
  throw new Error(`no such call ${call}`);
}

const run = clientName === "ollama-js" ? ollamaCalls : openaiCalls;
const out = {};
for (const call of callList.split(",")) {
  try {
    out[call] = { ok: await run(call) };
  } catch (error) {
    out[call] = { error: `${error?.constructor?.name}: ${error?.status ?? ""} ${error?.message ?? error}` };
  }
}
process.stdout.write(JSON.stringify(out) + "\n");
