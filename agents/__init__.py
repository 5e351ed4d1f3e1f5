"""physteer.agents: agents that act in the FrankaPick env, and the model internals they expose.

Imports storage, envs and sae (plus torch and transformers); never monitors, rollouts or above.

- agents.protocol: the lanes protocol (reset, act_batch, needs_image_for, decision_for, tap) and
  the model-free agents: ScriptedAgent (oracle), ExpertAgent (one profile), ReplayAgent.
- agents.backend: load any Hugging Face image-text-to-text model (load_vlm) and run it.
- agents.vlm_agent: VLMAgent, a VLM planner over the scripted expert.
- agents.tiny_model / agents.train_tiny: the embedded tiny SmolVLM-architecture model.
- agents.taps: ResidualTap, the residual stream at image tokens and the last token.
- agents.interventions / agents.neurons: AddVector, SAEFeatureSteering, NeuronOverride and
  neuron-cluster selection by value-vector vocabulary projection.

Submodules are imported on demand so that `import agents` stays light.
"""
