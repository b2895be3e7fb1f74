import json, sys, torch, numpy as np
torch.set_num_threads(1)
from longrope.models import load_model, load_tokenizer
from longrope.search.config import SearchConfig
from longrope.search.setup import load_samples, space_and_seeds, window
from longrope.search.gradient import FactorGradient
from longrope.search.descent import descend
n_hat=int(sys.argv[1]); steps=int(sys.argv[2]); lr=float(sys.argv[3]); lr_end=float(sys.argv[4])
cfg=SearchConfig(model='builtin',target_length=4096,docs=4,seed=0).resolved()
model=load_model('builtin'); tok=load_tokenizer('builtin')
samples,_,_=load_samples(cfg,tok,model,cfg.docs)
w=window(cfg,model); crit,seeds,space=space_and_seeds(cfg,w)
g=FactorGradient(model,samples,n_hat=n_hat,attn=space.attn,chunk=cfg.chunk)
def cb(st): print(st['step'], round(st['history'][-1]['value'],4), flush=True)
r=descend(g,space,seeds['yarn'],steps=steps,lr=lr,lr_end=lr_end,on_step=cb)
print('best',r.value,[round(x,3) for x in r.best])
json.dump({'n_hat':n_hat,'value':r.value,'best':list(map(float,r.best)),'history':r.history},open(f'nhat{n_hat}-{steps}-{lr}-{lr_end}.json','w'))
