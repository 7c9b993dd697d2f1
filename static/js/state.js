/* What the page's modules share: the shown job, the audio the server already has, the model cards and
   the damage slider's scale. */

export const state = {
  view: null,    // the job shown in the results
  source: null,  // {id, filename, fileKey}: the audio the server already has
  cards: {},     // model name -> card, from GET /api/models
  scale: null,   // the damage slider's mapping (damage.js makeScale)
};

export function selectedActionRadio() {
  return document.querySelector('#floss-form input[name="action"]:checked');
}

export function selectedAction() {
  const radio = selectedActionRadio();
  return radio ? radio.value : "";
}
