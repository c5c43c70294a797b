// @ts-check
// Building the page: every text from the server goes in as a text node, never as HTML.

/**
 * Creates an element. Children that are strings become text nodes.
 * @param {string} tag
 * @param {Record<string, string | boolean | ((e: any) => void)>} [attrs]
 * @param {(Node | string | null | undefined | false)[]} [children]
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (typeof value === "function") node.addEventListener(key.replace(/^on/, ""), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Text with its http(s) links made clickable; everything else stays text. @param {string} text */
export function linkified(text) {
  const out = document.createDocumentFragment();
  const pattern = /\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]]/g;
  let at = 0;
  for (const match of text.matchAll(pattern)) {
    const index = match.index ?? 0;
    out.append(document.createTextNode(text.slice(at, index)));
    out.append(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer" }, [match[0]]));
    at = index + match[0].length;
  }
  out.append(document.createTextNode(text.slice(at)));
  return out;
}

