// GraphiQL from our own files (graph/static/vendor/), talking to this origin's /graphql.
// The headers pane starts with a token placeholder; headers are kept in sessionStorage
// (this tab only), never in localStorage or the URL.
"use strict";

(function () {
  // GraphiQL's dialogs insert a <style> element; the bundle gives it this nonce, which
  // the page's Content-Security-Policy allows for styles (and for nothing else).
  window.__webpack_nonce__ = document.querySelector('meta[name="csp-nonce"]').content;

  const DEFAULT_QUERY = `# 1. In the Headers pane below, replace <your token> with a token.
# 2. Run the query: the play button, or Ctrl-Enter.
# 3. For the documentation and the explorer, re-fetch the schema (the arrows at the
#    bottom left): it needs the token too.
{
  metrics {
    instance
    totalMessages
    messagesByType { key count }
    firstMessageAt
  }
}
`;
  const DEFAULT_HEADERS = JSON.stringify({ token: "<your token>" }, null, 2);

  const fetcher = GraphiQL.createFetcher({ url: "/graphql" });
  const explorer = GraphiQLPluginExplorer.explorerPlugin();

  function App() {
    return React.createElement(GraphiQL, {
      fetcher,
      plugins: [explorer],
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      storage: window.sessionStorage,
      defaultEditorToolsVisibility: "headers",
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(App));
})();
