// jsq: JSON queries for Fabric, in JavaScript.
//
// Built into a component by componentize-js (scripts/build-tools); the WIT
// world is wit/world.wit, whose doc comments are the tools' descriptions.
// A function returning result<T, string> returns T, or throws the string.

function parse(document) {
  try {
    return JSON.parse(document);
  } catch (e) {
    throw `the document is not JSON: ${e.message}`;
  }
}

export const api = {
  get(document, path) {
    let value = parse(document);
    const steps = path === "" ? [] : path.split(".");
    for (const [i, step] of steps.entries()) {
      const here = steps.slice(0, i).join(".") || "the document";
      if (value === null || typeof value !== "object" || !Object.hasOwn(value, step)) {
        throw `${here} has no ${JSON.stringify(step)}`;
      }
      value = value[step];
    }
    return JSON.stringify(value);
  },

  keys(document) {
    const value = parse(document);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw "the document is not a JSON object";
    }
    return Object.keys(value).sort();
  },
};
