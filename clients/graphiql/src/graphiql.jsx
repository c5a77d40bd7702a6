// GraphiQL for yibao, served by the API itself (no CDN): api/graphiql.py renders the page, which loads
// only this bundle and its stylesheet from the same origin. Rebuild with scripts/build-graphiql.
import "graphiql/style.css";
import "@graphiql/plugin-explorer/style.css";
import "./page.css";

import { explorerPlugin } from "@graphiql/plugin-explorer";
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

const WELCOME = `# yibao GraphiQL: write a query, then run it with Ctrl-Enter or the run button.
#
# Log in with the demo identity provider (logins: resident, elder, spouse, ...):
#
#   mutation { login(provider: "demo", code: "resident") { accessToken expiresIn } }
#
# then put the access token in the Headers tab below:
#
#   { "Authorization": "Bearer <accessToken>" }
#
# and ask who you are:
#
#   { me { name idNumberMasked personalAccount { balanceFen } } }

{ __typename }
`;

// The page shares a query through its address: ?q=<query>&variables=<json>. Headers are never put
// there, so that an access token does not end up in the browser history.
function readParameters() {
  const search = new URLSearchParams(window.location.search);
  return { q: search.get("q") ?? undefined, variables: search.get("variables") ?? undefined };
}

function writeParameter(name, value) {
  const search = new URLSearchParams(window.location.search);
  if (value) {
    search.set(name, value);
  } else {
    search.delete(name);
  }
  const query = search.toString();
  window.history.replaceState(null, "", query ? `?${query}` : window.location.pathname);
}

// The GraphQL endpoint is the address of this page (GET with Accept: text/html renders the IDE).
const fetcher = createGraphiQLFetcher({ url: window.location.href.split(/[?#]/)[0] });
const explorer = explorerPlugin();

function App() {
  const [initial] = useState(readParameters);
  return (
    <GraphiQL
      fetcher={fetcher}
      plugins={[explorer]}
      defaultQuery={WELCOME}
      initialQuery={initial.q}
      initialVariables={initial.variables}
      onEditQuery={(value) => writeParameter("q", value)}
      onEditVariables={(value) => writeParameter("variables", value)}
      defaultEditorToolsVisibility={true}
      isHeadersEditorEnabled={true}
      shouldPersistHeaders={false}
      inputValueDeprecation={true}
    />
  );
}

createRoot(document.getElementById("graphiql")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
