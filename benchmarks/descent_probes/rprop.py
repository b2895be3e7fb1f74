import json, sys, math, torch, numpy as np
torch.set_num_threads(1)
from longrope.models import load_model, load_tokenizer
from longrope.search.config import SearchConfig
from longrope.search.setup import load_samples, space_and_seeds, window
from longrope.search.gradient import FactorGradient
from longrope.search.descent import project
L=int(sys.argv[1]); steps=int(sys.argv[2]); step0=float(sys.argv[3]); smax=float(sys.argv[4])
cfg=SearchConfig(model='builtin',target_length=L,docs=4,seed=0).resolved()
model=load_model('builtin'); tok=load_tokenizer('builtin')
samples,_,_=load_samples(cfg,tok,model,cfg.docs)
w=window(cfg,model); crit,seeds,space=space_and_seeds(cfg,w)
g=FactorGradient(model,samples,n_hat=0,attn=space.attn,chunk=cfg.chunk)
u=torch.tensor(project(np.log(np.asarray(seeds['yarn'])),space),dtype=torch.float64,requires_grad=True)
opt=torch.optim.Rprop([u],lr=step0,etas=(0.5,1.2),step_sizes=(1e-4,smax))
best=(math.inf,None); hist=[]
for k in range(steps):
    x=u.detach().numpy().copy(); v,gr=g(np.exp(x)); hist.append(v)
    if v<best[0]: best=(v,x)
    print(k, round(v,4), flush=True)
    opt.zero_grad(); u.grad=torch.tensor(gr,dtype=torch.float64); opt.step()
    with torch.no_grad(): u.copy_(torch.tensor(project(u.detach().numpy(),space)))
print('best',best[0],np.round(np.exp(best[1]),3).tolist())
json.dump({'L':L,'best':best[0],'factors':np.exp(best[1]).tolist(),'hist':hist},open(f'rprop{L}-{step0}-{smax}.json','w'))
