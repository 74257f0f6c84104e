// Address states and their colours, from states.json (data, not a closed list): a state the
// service starts reporting later still gets a stable colour of its own, derived from its name.

let known = new Map();
let order = [];

export async function loadStates() {
  const resp = await fetch(new URL("states.json", document.baseURI), { cache: "no-cache" });
  const doc = await resp.json();
  known = new Map(doc.states.map((s) => [s.state, s]));
  order = doc.states.map((s) => s.state);
}

function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

export function stateInfo(state) {
  const found = known.get(state);
  if (found) return found;
  const info = {
    state, label: state, color: `hsl(${hue(state)} 60% 45%)`, text: "#ffffff",
    meaning: "a state this console has no description for", free: false,
  };
  known.set(state, info);
  order.splice(Math.max(order.length - 1, 0), 0, state);
  return info;
}

// Taken states in display order (every state but the free one), known ones first.
export function takenStates() {
  return order.filter((s) => !known.get(s).free);
}

export function isFree(state) {
  return Boolean(stateInfo(state).free);
}

// Colours an element by state (CSSOM, which the Content-Security-Policy allows).
export function paint(element, state) {
  const info = stateInfo(state);
  element.style.backgroundColor = info.color;
  element.style.color = info.text;
  element.dataset.state = state;
  return element;
}
